// expect: return_value
// co_return must give something convertible to the task's value type.
#include <conflux/task.hpp>

#include <string>

conflux::task<int> wrong() { co_return std::string("not an int"); }

int main() { (void)wrong(); }
