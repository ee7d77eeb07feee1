"""Files and batches: the file store's records, a batch's input, the keeper that runs batches, their webhook events."""
