// The storage of one wire message: 8-byte aligned (validate() needs it), exactly size() bytes,
// reusable for a message of another size (reset) so that large messages do not fault in fresh
// pages every step. Storage of kHugeBytes or more is 2 MiB aligned and advised for transparent
// huge pages (where the kernel leaves that to madvise): a 40 MB message then costs the
// checksum pass, the sum and MPI's single-copy transfer (CMA pins the pages) 20 pages instead
// of 10,000, as numpy's own large arrays do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dlion::wire {

class Message {
 public:
  static constexpr std::size_t kHugeBytes = std::size_t{1} << 20;

  Message() = default;
  explicit Message(std::size_t len);  // zero-filled
  Message(const Message& other);
  Message& operator=(const Message& other);
  Message(Message&& other) noexcept;
  Message& operator=(Message&& other) noexcept;
  ~Message() = default;

  std::uint8_t* data() { return reinterpret_cast<std::uint8_t*>(words_.get()); }
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(words_.get()); }
  std::size_t size() const { return len_; }
  std::size_t capacity() const { return capacity_; }
  // size() becomes len; the content is unspecified (storage grows without copying or zeroing).
  void reset(std::size_t len);

 private:
  struct Free {
    void operator()(std::uint64_t* p) const noexcept;
  };
  std::unique_ptr<std::uint64_t[], Free> words_;
  std::size_t capacity_ = 0;  // bytes
  std::size_t len_ = 0;
};

}  // namespace dlion::wire
