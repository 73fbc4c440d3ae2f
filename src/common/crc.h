// Checksums used by GFS2: standard CRC-32 (IEEE, reflected; the dirent hash, rg_crc and the log
// header lh_hash) and CRC-32C (Castagnoli; the log header lh_crc). Thread-safe, header tables are
// built at compile time.
#ifndef UGFS2_SRC_COMMON_CRC_H_
#define UGFS2_SRC_COMMON_CRC_H_

#include <cstddef>
#include <cstdint>

namespace ugfs2 {

// Standard CRC-32 (zlib's crc32): init ~0, reflected, final xor ~0. Crc32("123456789") =
// 0xCBF43926.
uint32_t Crc32(const void* data, size_t len);

// Raw reflected CRC-32C update without pre/post inversion: crc = table-driven update of `crc`.
uint32_t Crc32cUpdate(uint32_t crc, const void* data, size_t len);

// GFS2 dirent name hash (== Crc32 of the name bytes).
inline uint32_t Gfs2DirentHash(const void* name, size_t len) { return Crc32(name, len); }

}  // namespace ugfs2

#endif  // UGFS2_SRC_COMMON_CRC_H_
