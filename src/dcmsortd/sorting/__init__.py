"""Filing an image: the series record and the layout plan (pure), and the store that writes them."""
