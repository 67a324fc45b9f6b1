#pragma once

#include <conflux/detail/cpp20.hpp>

namespace conflux::detail {

/// A doubly linked list threaded through its nodes: O(1) link at either end and unlink, no
/// allocation. `Node` has the members `Node* prev`, `Node* next` and `bool linked`, all
/// initially null or false. Not thread-safe: the owner's lock or thread serialises every use.
/// A channel's waiters are a FIFO of it (`push_back`, `front`); a loop's close hooks and a
/// child's waiters link at the front.
template <class Node>
class intrusive_list {
public:
    bool empty() const noexcept { return m_head == nullptr; }
    Node* front() const noexcept { return m_head; }

    /// Links `node` first.
    void link(Node* node) noexcept {
        node->prev = nullptr;
        node->next = m_head;
        if (m_head) {
            m_head->prev = node;
        } else {
            m_tail = node;
        }
        m_head = node;
        node->linked = true;
    }

    /// Links `node` last.
    void push_back(Node* node) noexcept {
        node->prev = m_tail;
        node->next = nullptr;
        if (m_tail) {
            m_tail->next = node;
        } else {
            m_head = node;
        }
        m_tail = node;
        node->linked = true;
    }

    /// Unlinking a node that is not linked (already taken, or never linked) does nothing.
    void unlink(Node* node) noexcept {
        if (!node->linked) return;
        if (node->prev) {
            node->prev->next = node->next;
        } else {
            m_head = node->next;
        }
        if (node->next) {
            node->next->prev = node->prev;
        } else {
            m_tail = node->prev;
        }
        node->prev = node->next = nullptr;
        node->linked = false;
    }

    /// Unlinks and returns the first node, or nullptr when none is left.
    Node* take_first() noexcept {
        Node* node = m_head;
        if (node) unlink(node);
        return node;
    }

private:
    Node* m_head = nullptr;
    Node* m_tail = nullptr;
};

} // namespace conflux::detail
