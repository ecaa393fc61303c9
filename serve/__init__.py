"""`hearth serve`: an OpenAI-compatible HTTP server, a face on the library (like cli/).

wire.py (the OpenAI request and response formats), completions.py (one request: jobs, whole
answers, streams), app.py (the FastAPI routes), server.py (bind, load, serve, stop). The
batching itself is the library's: `Model.service()` (runtime/service.py). FastAPI and uvicorn
are imported only here, so nothing else in hearth needs them (`pip install "hearth[serve]"`).
"""
