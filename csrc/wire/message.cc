#include "wire/message.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace dlion::wire {

namespace {

constexpr std::size_t kHugeAlign = std::size_t{2} << 20;  // one x86-64 huge page

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// Storage of at least len bytes (none for 0); *capacity receives its size.
std::uint64_t* allocate(std::size_t len, std::size_t* capacity) {
  if (len == 0) {
    *capacity = 0;
    return nullptr;
  }
  const bool huge = len >= Message::kHugeBytes;
  const std::size_t align = huge ? kHugeAlign : 64;
  const std::size_t bytes = round_up(len, align);
  void* p = std::aligned_alloc(align, bytes);
  if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  *capacity = bytes;
  return static_cast<std::uint64_t*>(p);
}

}  // namespace

void Message::Free::operator()(std::uint64_t* p) const noexcept { std::free(p); }

Message::Message(std::size_t len) : len_(len) {
  words_.reset(allocate(len, &capacity_));
  if (len > 0) std::memset(words_.get(), 0, capacity_);
}

Message::Message(const Message& other) : len_(other.len_) {
  words_.reset(allocate(other.len_, &capacity_));
  if (len_ > 0) std::memcpy(words_.get(), other.words_.get(), len_);
}

Message& Message::operator=(const Message& other) {
  if (this != &other) {
    Message copy(other);
    *this = std::move(copy);
  }
  return *this;
}

Message::Message(Message&& other) noexcept
    : words_(std::move(other.words_)),
      capacity_(std::exchange(other.capacity_, 0)),
      len_(std::exchange(other.len_, 0)) {}

Message& Message::operator=(Message&& other) noexcept {
  words_ = std::move(other.words_);
  capacity_ = std::exchange(other.capacity_, 0);
  len_ = std::exchange(other.len_, 0);
  return *this;
}

void Message::reset(std::size_t len) {
  if (len > capacity_) words_.reset(allocate(len, &capacity_));
  len_ = len;
}

}  // namespace dlion::wire
