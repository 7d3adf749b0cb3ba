"""The HTTP edge of the API function: request validation, the contract models and route table, responses, OpenAPI.

The route table is chalicelib/api/routes.py plus the review loop's routes, which review_routes adds to
it on import (issue 21): imported here, so no reader of the table ever sees half of it."""

from chalicelib.api import review_routes  # noqa: F401
