# expect: MLE (a list of 100 million references: 800 MB)
xs = [0] * 100_000_000
print(len(xs))
