"""The profile store: time-stamped, sourced traits with history, stats and segments."""
