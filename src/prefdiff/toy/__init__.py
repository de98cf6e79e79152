"""The embedded toy world (grows with the toy-world issue): synthetic preference data for now."""
