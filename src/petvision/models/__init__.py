"""The chapter's architectures: :mod:`.segmentation` and :mod:`.classification` hold one readable
builder function each (keras only, no tf.*); :mod:`.registry` is the table of the names a
configuration can give, which imports no Keras."""
