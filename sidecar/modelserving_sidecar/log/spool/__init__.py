"""The inference log's disk spool: segments of framed records, the ledger, the syncer thread."""
