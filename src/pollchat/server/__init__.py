"""The HTTP server: the app (``app.py``), its hot endpoint, its FastAPI routes, and the uvicorn runner.

A request meets ``app.PollchatApp`` first: the checks every request needs (``http.py``), then
``messages_endpoint.py`` for polls and sends, or FastAPI (``routes/``) for the rest; failures
become the error shape in ``errors.py``. ``run.py`` serves the app, one process or workers.
"""
