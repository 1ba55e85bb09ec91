// The tests' names for the in-memory TUN devices and UDP sockets of src/host/io-memory.ts (the
// same devices the daemon's warm-up uses): two daemons exchange real sealed datagrams through
// a FakeNetwork, with no root, no kernel device and no traffic on any interface.
export {
  MemoryNetwork as FakeNetwork,
  MemorySocket as FakeSocket,
  MemoryTun as FakeTun,
} from "../../src/host/io-memory.js";
