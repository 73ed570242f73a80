"""OpenAI-compatible chat endpoints, beneath `dermvqa eval`'s openai: backend and judge and `dermvqa data teach`.

client.py sends requests under one retry policy (sync and asyncio callers), endpoint.py holds the values it
takes and returns (Endpoint, EndpointError, Failure, Sent), protocol.py says what a request carries and how a reply
is read, cache.py keeps the paid replies and the failure history, options.py defines the endpoint flags both
commands take. It imports neither data_gen nor dermvqa, so both can stand on it.
"""
