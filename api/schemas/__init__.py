"""The wire types: the spec's native bodies, OpenAI's, and the limits of one deployment written into them."""
