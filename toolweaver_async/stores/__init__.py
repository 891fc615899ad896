"""Cache layers, each behind the :class:`~toolweaver_async.stores.base.Store` protocol."""
