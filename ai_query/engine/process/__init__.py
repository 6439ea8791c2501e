"""Engine processes: starting and stopping ``ai-query serve`` subprocesses, the lifeline that lets
none outlive its parent, the embedded private engine server, and supervision with bounded
restarts.
"""
