"""The one structured logger (Powertools): JSON lines with task_id, message_id...

Never log whole events or ad text: events carry seller content.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="ad-moderation")
