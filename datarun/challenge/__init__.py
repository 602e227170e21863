"""What participants do on a problem: events (who may submit, when, how often) and
submissions (stored content-addressed, one queued task per fold)."""
