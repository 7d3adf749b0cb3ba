"""Local-only machinery: embedded PostgreSQL, host-mode LocalStack, the SQS runner.

Never shipped to Lambda (only app.py, chalicelib/ and requirements.txt are).
"""
