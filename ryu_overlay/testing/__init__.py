"""Support shared by the tests, the benchmarks (bench/) and the Mininet experiments (mininet/).

Nothing in the runtime package imports it. Its modules:

* ``scenario``: a small multi-tenant placement on an in-process controller (unit and simulator tests);
* ``loadgen``: fake OpenFlow 1.3 switches (``FakeSwitch``, ``Fleet``) and generated placements;
* ``controller_proc``: the real ``ryu-overlay`` process, its REST client and ``wait_in_sync``;
* ``netns_testbed``: hypervisors with their own Open vSwitch (``OvsInstance``), and VMs, in network namespaces;
* ``overlay``: a controller and a testbed with tenants deployed; ``vmtools``: traffic made inside VMs;
* ``mininet_topo``: the routed leaf/spine overlay in Mininet (needs Debian's ``mininet`` package);
* ``report``: the percentile rule and the tables benchmarks and experiments print.
"""
