"""HTML pages: buyer pages, the sandbox checkout, connect results, and the admin UI."""
