#include "test.h"
void suite_data(dm_t *t) { (void)t; }
