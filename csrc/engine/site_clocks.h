// SiteClocks: the pacing clocks of emulated links that several senders share, in memory that
// every process of one host maps (POSIX shared memory), so that all rank pairs crossing one
// emulated site pair queue on one wire, as on a real network (link.h, DESIGN.md section 10).
//
// A clock is one "wire free at" stamp: nanoseconds of Clock (steady_clock, CLOCK_MONOTONIC on
// Linux: one clock for every process of the host) at which the wire's last reserved message
// leaves it; 0 means it never carried anything. Senders reserve the wire with a compare-and-swap
// loop (Link::schedule), so no lock is shared between processes and a sender that dies holding
// nothing leaves nothing locked. Each clock has a cache line of its own.
//
// Lifetime (runtime.init does it; every process of the job takes part):
//   1. rank 0 picks a name unique to the job and the communicator and tells every rank (the
//      topology allgather);
//   2. every rank opens it (open(): created by whichever process of the host comes first,
//      sized, zero-filled, mapped);
//   3. after a barrier (every process of every host has mapped it), every rank unlinks the
//      name (unlink(): the first one removes it, the others find it gone), so nothing is left
//      in /dev/shm once the job ends, however it ends; the mapping lives until the last
//      SiteClocks of the host is destroyed.
// Only processes of one host can share memory: ranks of one site on two hosts pace their
// cross-site messages on two wires (the in-process emulation is a one-machine tool).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace dlion {

class SiteClocks {
  struct Key {  // lets open() and local() use std::make_shared; nobody else can make one
    explicit Key() = default;
  };

 public:
  using Stamp = std::atomic<std::int64_t>;
  // Mapped by several processes, a clock must not rely on a lock in any one of them.
  static_assert(Stamp::is_always_lock_free, "wire clocks need lock-free 64-bit atomics");

  // Opens (creating if needed) the shared table `name` of `slots` clocks and maps it. A name
  // is "/" and up to 200 characters of [A-Za-z0-9._-]; slots >= 1. InvalidArgument for a bad
  // name or count, Error when the system refuses (shm_open, ftruncate, mmap; with errno's text).
  static std::shared_ptr<SiteClocks> open(const std::string& name, std::size_t slots);
  // A table of `slots` clocks in this process only (for one process, or where shared memory is
  // missing).
  static std::shared_ptr<SiteClocks> local(std::size_t slots);
  // Removes the name (the mappings stay); false when it was already gone. Error for any other
  // failure.
  static bool unlink(const std::string& name);

  SiteClocks(Key, void* base, std::size_t slots, bool shared);
  ~SiteClocks();
  SiteClocks(const SiteClocks&) = delete;
  SiteClocks& operator=(const SiteClocks&) = delete;

  std::size_t slots() const { return slots_; }
  bool shared() const { return shared_; }
  Stamp& slot(std::size_t i);  // InvalidArgument when i >= slots()

 private:
  struct alignas(64) Line {
    Stamp free_at_ns;
  };
  static std::size_t bytes_for(std::size_t slots) { return slots * sizeof(Line); }

  Line* lines_;
  std::size_t slots_;
  bool shared_;
};

}  // namespace dlion
