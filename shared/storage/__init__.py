"""Where the gateway keeps things: every Redis client, the file store, batch lines' records."""
