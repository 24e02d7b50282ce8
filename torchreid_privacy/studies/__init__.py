"""Studies of a method setting: the ``demo`` (train, evaluate, attack on the embedded set), the
privacy-utility ``frontier`` over seeds with its plot, and the tables both print (``report``)."""
