"""The model `F = h o g_ar o d` (`model`), its objectives (`losses`), the view transforms
(`transforms`) and the k-means its label-free centres use (`kmeans`)."""
