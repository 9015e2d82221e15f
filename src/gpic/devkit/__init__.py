"""Developer kit beside the product, never imported by it: the demo corpus builder and the
tiny random-weight models that tests and the demo run the real inference code with."""
