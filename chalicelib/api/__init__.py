"""The HTTP edge of the API function: request validation, the contract models and route table, responses, OpenAPI.

The route table is chalicelib/api/routes.py plus the review loop's routes (review_routes, issue 21) and
the webhook routes (webhook_routes, issue 22), which add themselves to it on import: imported here, so no
reader of the table ever sees half of it."""

from chalicelib.api import review_routes, webhook_routes  # noqa: F401
