"""The HTTP edge. Importing it completes the route table with the webhook routes (chalicelib/api/webhook_routes.py)."""

from chalicelib.api import webhook_routes as webhook_routes
