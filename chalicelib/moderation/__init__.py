"""The API's use cases: score now, submit, read and list tasks, close an ad, health."""
