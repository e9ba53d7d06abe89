"""The engine: waiting items packed into provider jobs, each stepped through submit, poll and
fetch under a lease, with retries and pacing, and its outcome written and recorded."""
