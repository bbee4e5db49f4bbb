"""The node kinds a pipeline runs, each with the pool that runs it in
worker processes: xconnect (XConnectNode, XConnectPool), router (RouterNode,
RouterPool), tester (TesterNode, TesterPool).  A node class keeps the
contract of memifx.workers.node, so it runs the same in a worker and in the
main process."""
