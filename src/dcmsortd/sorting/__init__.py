"""Filing an image: examine it (processor), plan its paths and fold it into its series record
(pure: layout, series), and write the trees (store, fsio), the index of handled files and the
failed list."""
