"""Taking notices in: the named pipe, the durable spool, and handing a notice over."""
