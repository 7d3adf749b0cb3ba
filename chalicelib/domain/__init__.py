"""Pure domain: task states and records, the features an ad is scored on, verdicts. No I/O."""
