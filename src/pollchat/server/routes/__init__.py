"""The cold routes on FastAPI, one module per resource (the hot ones are ``pollchat.server.messages_endpoint``)."""
