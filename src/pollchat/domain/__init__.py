"""What every layer shares: the records, the error tree, the rule book, cursors and ids."""
