// An intrusive doubly-linked FIFO of waiters. The nodes live inside the waiting operation (an awaitable in a
// coroutine frame, or a blocked thread's stack), so waiting never allocates and a cancelled wait unlinks
// itself in O(1). Not thread-safe: every channel guards its lists with its own mutex.
#pragma once

namespace postal::detail {

struct list_node {
  list_node* prev = nullptr;
  list_node* next = nullptr;
  bool linked() const noexcept { return prev != nullptr; }
};

/// FIFO of nodes of type Node (which derives from list_node).
template <class Node>
class intrusive_list {
 public:
  intrusive_list() noexcept { head_.prev = head_.next = &head_; }
  intrusive_list(const intrusive_list&) = delete;
  intrusive_list& operator=(const intrusive_list&) = delete;

  bool empty() const noexcept { return head_.next == &head_; }
  Node* front() noexcept { return empty() ? nullptr : static_cast<Node*>(head_.next); }

  void push_back(Node* node) noexcept {
    list_node* n = node;
    n->prev = head_.prev;
    n->next = &head_;
    head_.prev->next = n;
    head_.prev = n;
  }
  Node* pop_front() noexcept {
    if (empty()) return nullptr;
    Node* node = static_cast<Node*>(head_.next);
    remove(node);
    return node;
  }
  /// Unlinks `node`; it must be linked in this list.
  void remove(Node* node) noexcept {
    list_node* n = node;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
  /// Calls f(node) for each node, front to back; f may not unlink nodes other than the one it was given.
  template <class F>
  void for_each(F&& f) {
    for (list_node* n = head_.next; n != &head_;) {
      list_node* next = n->next;
      f(static_cast<Node*>(n));
      n = next;
    }
  }

 private:
  list_node head_;
};

}  // namespace postal::detail
