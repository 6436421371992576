// Endpoint operations: key reveal/copy/regenerate and the test form (filled in by the operations pages work).
