// The output cache declared in output_pool.h.
#include "output_pool.h"

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/core/Allocator.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "policy.h"

namespace snnkernels {
namespace {

constexpr int64_t kHugePage = int64_t(2) << 20;
constexpr int64_t kGranule = int64_t(64) << 10;  // sizes are rounded up to this

// Blocks of a huge page or more start on a huge-page boundary, so THP can back all of them.
int64_t alignment_for(int64_t bytes) { return bytes >= kHugePage ? kHugePage : 64; }

// New memory: ask for transparent huge pages (one fault maps 2 MiB, not 4 KiB) and map it all
// now, in parallel, with MADV_POPULATE_WRITE instead of one trap per page on first write. Both
// are hints: errors are ignored, and they are no-ops where the kernel lacks them.
void map_in(void* data, int64_t bytes) {
#if defined(__linux__)
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
#if defined(MADV_HUGEPAGE)
  if (bytes >= kHugePage) madvise(data, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);
#endif
#if defined(MADV_POPULATE_WRITE)
  // Page-aligned pieces of at most a huge page each, split over the threads.
  const uintptr_t page = 4096;
  const uintptr_t first = (begin + page - 1) & ~(page - 1), last = (begin + bytes) & ~(page - 1);
  if (last <= first) return;
  const int64_t pieces = static_cast<int64_t>((last - first + kHugePage - 1) / kHugePage);
  at::parallel_for(0, pieces, 1, [&](int64_t b0, int64_t b1) {
    const uintptr_t lo = first + b0 * kHugePage;
    const uintptr_t hi = std::min<uintptr_t>(last, first + b1 * kHugePage);
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
  });
#endif
  (void)begin;
#else
  (void)data;
  (void)bytes;
#endif
}

struct Block {
  void* data;
  int64_t bytes;  // a multiple of kGranule
};

class Pool {
 public:
  Block acquire(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* data = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        ++hits_;
        return {data, bytes};
      }
      ++misses_;
    }
    void* data = nullptr;
    if (posix_memalign(&data, alignment_for(bytes), bytes) != 0) {
      // Free what is cached and try once more before giving up.
      trim_to(0);
      TORCH_CHECK(posix_memalign(&data, alignment_for(bytes), bytes) == 0,
                  "snnkernels: out of memory allocating ", bytes, " bytes for an output");
    }
    map_in(data, bytes);
    return {data, bytes};
  }

  void give_back(Block block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + block.bytes <= limit_) {
        free_[block.bytes].push_back(block.data);
        cached_ += block.bytes;
        return;
      }
    }
    std::free(block.data);
  }

  void trim_to(int64_t target) {
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Largest buffers first: fewest frees to get under the target.
      for (auto it = free_.rbegin(); it != free_.rend() && cached_ > target; ++it) {
        while (!it->second.empty() && cached_ > target) {
          dropped.push_back(it->second.back());
          it->second.pop_back();
          cached_ -= it->first;
        }
      }
    }
    for (void* p : dropped) std::free(p);
  }

  void set_limit(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
    }
    trim_to(bytes);
  }

  int64_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

  PoolStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cached_, limit_, hits_, misses_};
  }

 private:
  std::mutex mutex_;
  std::map<int64_t, std::vector<void*>> free_;  // rounded size -> free buffers of that size
  int64_t cached_ = 0;
  int64_t limit_ = cpu::pool_limit_mib() << 20;
  int64_t hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors may outlive static destruction at interpreter exit.
Pool& pool() {
  static Pool* instance = new Pool();
  return *instance;
}

void delete_block(void* ctx) {
  Block* block = static_cast<Block*>(ctx);
  pool().give_back(*block);
  delete block;
}

struct PooledAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    const int64_t bytes = (static_cast<int64_t>(n) + kGranule - 1) / kGranule * kGranule;
    Block* block = new Block(pool().acquire(std::max(bytes, kGranule)));
    return {block->data, block, &delete_block, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

PooledAllocator pooled_allocator;

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_CHECK(options.device().is_cpu(), "snnkernels: pooled_empty is for CPU tensors");
  // Caching off: torch's allocator, whose recycling beats mapping in every buffer here.
  if (pool().limit() == 0) return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &pooled_allocator,
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), c10::nullopt);
}

bool pool_takes(int64_t bytes) { return bytes >= cpu::pool_min_bytes(); }

PoolStats pool_stats() { return pool().stats(); }
void pool_set_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "snnkernels: the CPU output cache limit must be >= 0 bytes, got ", bytes);
  pool().set_limit(bytes);
}
void pool_release() { pool().trim_to(0); }

}  // namespace snnkernels
