"""The chapter's architectures: :mod:`.segmentation` and :mod:`.classification` hold one readable
builder function each (keras only, no tf.*); :mod:`.registry` finds a configured name's builder
(the table of names is :mod:`petvision.config.architectures`); :mod:`.xla` makes them compile."""
