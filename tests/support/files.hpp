// Test support: files a test writes. A fresh directory per test, removed afterwards, and the two ways a
// file gets new contents (written in place, or written beside it and renamed over it, as editors save).
#pragma once

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>

namespace test_support {

struct scratch_dir {
  std::filesystem::path path;
  explicit scratch_dir(const std::string& prefix) {
    std::random_device random;
    path = std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(random()));
    std::filesystem::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
};

inline void write_in_place(const std::filesystem::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::trunc | std::ios::binary);
  out << text;
}

inline void write_by_rename(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::path temporary = file;
  temporary += ".tmp";
  write_in_place(temporary, text);
  std::filesystem::rename(temporary, file);
}

}  // namespace test_support
