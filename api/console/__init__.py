"""The web console at ``/console``: a page, its script and its style, served by the API."""
