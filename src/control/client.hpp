// vsymctl's side of the control socket (H5 fills this in).
#pragma once
