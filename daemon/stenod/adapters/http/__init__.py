"""stenod's HTTP server (FastAPI on uvicorn, in the daemon's loop): OpenAI's audio API,
whisper-asr-webservice's ``/asr``, the job API, health and metrics. Every route calls the
core's entry points (request intake, the journal); none has job logic of its own."""
