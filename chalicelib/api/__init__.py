"""The HTTP edge of the API function: request validation, the contract models and route table, responses, OpenAPI."""
