"""The chat's services, one per concern: sessions (who may see which), sending, polling.

The HTTP endpoints are thin around these; so are the assistant runner and the command line.
Each service asks ``pollchat.domain.rules`` who may do what and never restates a rule.
"""
