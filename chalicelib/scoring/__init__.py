"""The scoring function's use case: one SQS batch claimed, scored, written and acknowledged."""
