"""The ``scoped`` program: its command line, server start-up and the lab runner.

Program assembly sits above everything else: it imports the core
(``scoped``), the front ends (``scoped_middleware``) and the servers that run
them (uvicorn, granian, aiohttp), so that the core never has to.
"""
