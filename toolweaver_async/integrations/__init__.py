"""Adapters for agent frameworks, each behind an extra of its name: ``langchain``, ``langgraph``,
``mcp``, ``llama-index``. Import the submodule you need; this package imports none of them."""
