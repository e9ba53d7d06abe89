"""Taking requests in, from any source: the request message checked, then committed as a job."""
