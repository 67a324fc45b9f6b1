#pragma once
// A backend leaf that includes a public header.
#include <conflux/widget.hpp>
