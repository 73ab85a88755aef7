"""Taking notices in: the named pipe, the durable spool, and handing a notice over. The line
parser and ``Arrival`` live in ``model.notice``: every stage uses them."""
