"""`make load`: a headless locust load test of the moderation API.

- locustfile.py: the simulated clients (run by locust, in its own process:
  locust monkeypatches the standard library with gevent);
- run.py: starts locust, reports;
- report.py: the figures (pure functions, no locust import).
"""
