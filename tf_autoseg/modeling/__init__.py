"""The model `F = h o g_ar o d` (`model`), a step's two views (`views`), its AC / ARL objective
(`objective`, on the losses of `losses`), the view transforms (`transforms`) and the k-means of
its label-free centres (`kmeans`)."""
